#!/usr/bin/env python3
"""The two patches the test node's gVisor needs on this kind of machine
(the README's "The real node" section), applied to copies of the pinned sources.

  a) gvisor pkg/shim/v1/manager.go: the shim sets its own oom_score_adj to -999 and
     aborts when it cannot; this VM refuses negative values even to root, so the
     error is ignored.
  b) containerd/v2 pkg/shim/shim.go: the shim prints containerd 2.x's JSON bootstrap
     parameters; Debian's containerd 1.6 wants the bare address (2.x accepts it too).

usage: patch.py GVISOR_SRC CONTAINERD_V2_SRC
"""

import sys


def patch(path: str, old: str, new: str) -> None:
    with open(path) as f:
        text = f.read()
    if text.count(old) != 1:
        sys.exit(f"patch.py: the text to patch is not found exactly once in {path}")
    with open(path, "w") as f:
        f.write(text.replace(old, new))


def main() -> None:
    gvisor, containerd = sys.argv[1], sys.argv[2]
    patch(
        gvisor + "/pkg/shim/v1/manager.go",
        'return shim.BootstrapParams{}, fmt.Errorf("failed to set OOM Score on shim: %w", err)',
        "_ = err // sandgate test node: a negative oom_score_adj is refused here; go on",
    )
    write = """		if _, err := os.Stdout.Write(data); err != nil {
			return err
		}

		return nil"""
    patch(
        containerd + "/pkg/shim/shim.go",
        write,
        """		// sandgate test node: containerd 1.x expects the bare address.
		if params.Version == 2 && params.Protocol == "ttrpc" {
			data = []byte(params.Address)
		}
"""
        + write,
    )


if __name__ == "__main__":
    main()
