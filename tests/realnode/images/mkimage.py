#!/usr/bin/env python3
"""Packs a directory into a single-layer OCI image archive (an OCI layout in a tar)
that `ctr -n k8s.io images import` accepts; the image name comes from the
`io.containerd.image.name` annotation. Deterministic: file times and owners names are
zeroed, entries sorted, gzip without a timestamp.

usage: mkimage.py ROOTFS NAME:TAG OUT.tar [--entrypoint a,b] [--cmd a,b] [--env K=V ...]
                  [--user UID:GID]
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile

PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("rootfs")
    p.add_argument("ref")
    p.add_argument("out")
    p.add_argument("--entrypoint", default="")
    p.add_argument("--cmd", default="")
    p.add_argument("--env", action="append", default=[PATH])
    p.add_argument("--user", default="")
    a = p.parse_args()

    def norm(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.mtime = 0
        ti.uname = ti.gname = ""
        return ti

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name in sorted(os.listdir(a.rootfs)):
            t.add(os.path.join(a.rootfs, name), arcname=name, filter=norm)
    layer_tar = raw.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_tar).hexdigest()
    gz = gzip.compress(layer_tar, compresslevel=1, mtime=0)

    blobs: dict[str, bytes] = {}

    def blob(data: bytes, media_type: str) -> dict:
        d = hashlib.sha256(data).hexdigest()
        blobs[d] = data
        return {"mediaType": media_type, "digest": "sha256:" + d, "size": len(data)}

    layer = blob(gz, "application/vnd.oci.image.layer.v1.tar+gzip")
    config: dict = {"Env": a.env}
    if a.entrypoint:
        config["Entrypoint"] = a.entrypoint.split(",")
    if a.cmd:
        config["Cmd"] = a.cmd.split(",")
    if a.user:
        config["User"] = a.user
    cfg = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "mkimage.py"}],
    }
    c = blob(json.dumps(cfg).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": c,
        "layers": [layer],
    }
    m = blob(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
    m["annotations"] = {
        "io.containerd.image.name": a.ref,
        "org.opencontainers.image.ref.name": a.ref.rsplit(":", 1)[1],
    }
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [m],
    }
    with tarfile.open(a.out, "w") as t:

        def add(name: str, data: bytes) -> None:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 0
            t.addfile(ti, io.BytesIO(data))

        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", json.dumps(index).encode())
        for d, data in sorted(blobs.items()):
            add("blobs/sha256/" + d, data)
    print(a.ref, m["digest"], len(gz), "bytes compressed")


if __name__ == "__main__":
    main()
