# tabbify-appsrv: the artifact server nodes fetch app artifacts from (:9000). Plain HTTP needs
# --insecure-no-mtls off loopback, as for the coordinator.
ARG BASE=tabbify-base
FROM ${BASE}
COPY rootfs/ /
COPY bin/ /usr/local/bin/
ENV TABBIFY_APPSRV_LISTEN=[::]:9000 \
    TABBIFY_APPSRV_DATA_DIR=/var/lib/tabbify-appsrv
VOLUME /var/lib/tabbify-appsrv
EXPOSE 9000/tcp
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tabbify-appsrv"]
LABEL org.opencontainers.image.title="tabbify-appsrv" \
      org.opencontainers.image.description="Tabbify artifact server"
