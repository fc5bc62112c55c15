# tabbify-supervisor: a Tabbify node. Static musl binaries built on the host (the supervisor and,
# when built, the per-app runner; build-images.sh --host adds their shared libraries instead) on
# tabbify-base, plus iproute2's ip (with its libraries) for
# the JSON the supervisor asks it for. It offers wasm; you add capabilities at launch:
#   --device /dev/net/tun --cap-add NET_ADMIN            the mesh (always needed to join)
#   -v /var/run/docker.sock:/var/run/docker.sock --network host    the docker runtime
#   --device /dev/kvm with the :fc image                  the microVM runtime
# State (mesh-identity.json: the node's key and ULA) lives in the /var/lib/tabbify volume.
ARG BASE=tabbify-base
FROM ${BASE}
COPY bin/ /usr/local/bin/
COPY rootfs/ /
ENV TABBIFY_DATA_DIR=/var/lib/tabbify
VOLUME /var/lib/tabbify
EXPOSE 8730/tcp 51820/udp
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tabbify-supervisor"]
LABEL org.opencontainers.image.title="tabbify-supervisor" \
      org.opencontainers.image.description="Tabbify node (wasm runtime; docker with the host socket)"
