# tabbify-supervisor:fc: the node plus what the microVM runtime needs: QEMU (microvm machine, from
# the build host's Debian qemu-system-x86 with its libraries and firmware) and, when the operator
# supplied them to build-images.sh, a firecracker binary and a guest kernel. Run it with
# --device /dev/kvm to offer the firecracker runtime.
ARG SUPERVISOR=tabbify-supervisor
FROM ${SUPERVISOR}
COPY rootfs/ /
ENV TABBIFY_VM_KERNEL=/usr/local/share/tabbify/vmlinux
LABEL org.opencontainers.image.title="tabbify-supervisor:fc" \
      org.opencontainers.image.description="Tabbify node with the microVM runtime (QEMU, optional firecracker)"
