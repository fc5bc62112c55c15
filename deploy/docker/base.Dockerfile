# tabbify-base: Debian's static busybox on an empty image — a shell, ping, wget and ip for
# operators and health checks, nothing else. Built locally from scratch (no registry needed) by
# deploy/docker/build-images.sh, which puts /bin/busybox into the build context.
FROM scratch
COPY rootfs/ /
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL org.opencontainers.image.title="tabbify-base" \
      org.opencontainers.image.description="busybox-static base for Tabbify images"
