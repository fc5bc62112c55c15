# tabbify-coordinator: the mesh's roster service (and tcli, for `docker exec ... tcli token
# create`). It serves plain HTTP only with --insecure-no-mtls (TLS is pending):
#   docker run -d --name tbf-coord -p 8888:8888 -v tbf-coord:/var/lib/tabbify-coordinator \
#     tabbify-coordinator --insecure-no-mtls
# The admin token is created in the volume on first start (admin-token).
ARG BASE=tabbify-base
FROM ${BASE}
COPY rootfs/ /
COPY bin/ /usr/local/bin/
ENV TABBIFY_COORDINATOR_LISTEN=[::]:8888 \
    TABBIFY_COORDINATOR_DATA_DIR=/var/lib/tabbify-coordinator \
    TABBIFY_ADMIN_TOKEN_FILE=/var/lib/tabbify-coordinator/admin-token
VOLUME /var/lib/tabbify-coordinator
EXPOSE 8888/tcp
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tabbify-coordinator"]
LABEL org.opencontainers.image.title="tabbify-coordinator" \
      org.opencontainers.image.description="Tabbify mesh coordinator"
