#!/usr/bin/env bash
# System packages the test suite needs: a real OpenSSH server for the loopback device tests, and the Arm
# cross-compiler that compiles the generated TensorFlow Lite Micro sources for Cortex-M7.
set -euo pipefail
need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v arm-none-eabi-g++ >/dev/null 2>&1 || need+=(gcc-arm-none-eabi libstdc++-arm-none-eabi-newlib)
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
