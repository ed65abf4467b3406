#!/usr/bin/env bash
# System packages the test suite needs: a real OpenSSH server for the loopback device tests; the Arm
# cross-compiler, newlib and qemu-system-arm that build TensorFlow Lite Micro for Cortex-M7 and boot it
# (mps2-an500); qemu-user-static + debootstrap + binfmt-support + zstd for the emulated aarch64 (Raspberry-Pi-like)
# device; PostgreSQL server binaries for the results-store tests. (TFLM's Makefile runs python3 with numpy + Pillow at parse time: the project's .venv has both.)
set -euo pipefail
need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v arm-none-eabi-g++ >/dev/null 2>&1 || need+=(gcc-arm-none-eabi libstdc++-arm-none-eabi-newlib)
[ -e /usr/lib/arm-none-eabi/newlib/libc.a ] || [ -d /usr/lib/arm-none-eabi/newlib ] || need+=(libnewlib-arm-none-eabi)
command -v qemu-system-arm >/dev/null 2>&1 || need+=(qemu-system-arm)
command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
command -v update-binfmts >/dev/null 2>&1 || [ -x /usr/sbin/update-binfmts ] || need+=(binfmt-support)
command -v zstd >/dev/null 2>&1 || need+=(zstd)
command -v busybox >/dev/null 2>&1 || need+=(busybox)  # the device lock is also tested under busybox sh
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)  # a real server for the store tests
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # the HTML reports opened in a real browser
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "system-deps: missing ${need[*]}; install with: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  echo "system-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
