"""``edgeopt emulate DEVICE build|up|down|status``: an emulated aarch64 device (qemu-user chroot with its own sshd
on 127.0.0.1) to run ``edgeopt bench`` against without hardware. Argument parsing and printing only; the work is
:mod:`edgeopt.emulate` (docs/emulate.md)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeopt.cli.args import add_later, positive_int

if TYPE_CHECKING:
    from edgeopt.emulate import Connection, EmulatedDevice


def progress_line(line: str) -> None:
    print(f"edgeopt emulate: {line}", file=sys.stderr, flush=True)


def device(args: argparse.Namespace) -> EmulatedDevice:
    from edgeopt.emulate import EmulatedDevice, recipe

    return EmulatedDevice(recipe(args.device), workdir=args.dir, port=getattr(args, "port", None))


def print_connection(conn: Connection) -> None:
    print(f"emulated {conn.device} (aarch64, qemu-user — latency is NOT hardware latency) is up on "
          f"{conn.host}:{conn.port}")
    print("benchmark it with:")
    print(f"  {conn.bench_command()}")
    print(f"log in with:\n  {conn.ssh_command()}")
    print(f"(ssh_config alias {conn.alias} in {conn.ssh_config}; stop it with: edgeopt emulate {conn.device} down)")


def cmd_emulate(args: argparse.Namespace) -> int:
    dev = device(args)
    out: dict[str, Any]
    if args.action == "build":
        started = time.monotonic()
        outcome = dev.build(force=args.force, progress=progress_line)
        out = {"action": outcome.action, "seconds": outcome.seconds, "key": outcome.key,
               "image": str(outcome.image), "image_bytes": outcome.image_bytes, "rootfs": str(dev.rootfs),
               "wall_seconds": round(time.monotonic() - started, 1)}
        text = (f"{args.device}: root filesystem {outcome.action} in {outcome.seconds:.1f} s "
                f"(image {outcome.image}, {outcome.image_bytes / 1e6:.0f} MB; rootfs {dev.rootfs})")
    elif args.action == "up":
        conn = dev.up(progress=progress_line)
        if args.json:
            print(json.dumps(conn.to_json(), indent=2))
        else:
            print_connection(conn)
        return 0
    elif args.action == "down":
        out = dev.down(progress=progress_line)
        text = (f"{args.device}: stopped ({len(out['stopped_pids'])} process(es) ended, "
                f"{len(out['unmounted'])} mount(s) removed)" if out["was_up"] or out["unmounted"] or
                out["stopped_pids"] else f"{args.device}: was not up; nothing mounted")
    else:
        out = dev.status()
        image = f"image {out['image']} ({out['image_bytes'] / 1e6:.0f} MB)" if out["image"] else \
            f"no image cached for recipe {out['recipe_key']} (`edgeopt emulate {args.device} build`)"
        state = f"up on 127.0.0.1:{out['port']} (sshd pid {out['pid']})" if out["up"] else "down"
        text = f"{args.device}: {state}; {image}; rootfs {out['rootfs'] or 'none'}"
        if out["mounts"] and not out["up"]:
            text += f"; {len(out['mounts'])} mount(s) left — run `edgeopt emulate {args.device} down`"
        if out["up"]:
            text += f"\n  {out['connection']['bench_command']}"
    print(json.dumps(out, indent=2) if args.json else text)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``emulate``."""
    e = sub.add_parser("emulate", help="an emulated aarch64 device (qemu-user chroot + sshd) for edgeopt bench",
                       description="An emulated device: a Debian arm64 root filesystem run through qemu-user on "
                       "this host's kernel, with its own aarch64 sshd on 127.0.0.1. Needs root. Its latency is "
                       "meaningless (results are flagged 'emulated'); use it for 'runs on aarch64' and parity.")
    add_later(e, _arguments)  # the device kinds come from edgeopt.emulate: imported only for `edgeopt emulate`


def _arguments(e: argparse.ArgumentParser) -> None:
    from edgeopt.emulate import RECIPES

    e.add_argument("device", choices=sorted(RECIPES), help="device kind")
    actions = e.add_subparsers(dest="action", required=True)
    helps = {"build": "build the root filesystem once (cached; later builds only restore it)",
             "up": "start the device (builds or restores when needed) and print how to reach it",
             "down": "stop the device and unmount everything (also after a failed up)",
             "status": "cached image, root filesystem, running or not"}
    for name, text in helps.items():
        a = actions.add_parser(name, help=text, description=text)
        a.add_argument("--dir", type=Path, metavar="DIR",
                       help="the device's directory (default <cache>/emulate/DEVICE/device)")
        a.add_argument("--json", action="store_true", help="machine-readable output on stdout")
        if name == "build":
            a.add_argument("--force", action="store_true", help="rebuild the image even when one is cached")
        if name == "up":
            a.add_argument("--port", type=positive_int, help="sshd port on 127.0.0.1 (default 2322)")
        a.set_defaults(func=cmd_emulate)
