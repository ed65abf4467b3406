"""Emulated devices: an aarch64 (Raspberry-Pi-like) root filesystem run through qemu-user with its own sshd."""
