#!/usr/bin/env bash
# Builds (or reuses) the sandgate OCI image, with no container engine and no registry,
# reproducibly, as an OCI layout in a tar that `ctr images import` (or `skopeo copy
# oci-archive:...`) accepts, named sandgate.local/sandgate:<tag>:
#
#   usr/local/bin/sandgate    `cargo build --release --locked --bin sandgate`, or the
#                             binary --binary names, its debug sections stripped
#   etc/sandgate/policies     the repo's policies/ (*.rego and .json/.yaml data files)
#   usr/lib/..., lib, lib64   a distroless-style base from Debian's packages: exactly the
#                             shared libraries the binary needs (its NEEDED entries, and
#                             theirs) and the dynamic loader, from `apt-get download` of
#                             the packages that own them (libc6, libgcc-s1), each
#                             package's /usr/share/doc/<pkg>/copyright, usrmerge layout
#   etc/passwd, etc/group     root and nonroot (65532); etc/nsswitch.conf; tmp/ (1777)
#
# No shell, no package manager. Entrypoint /usr/local/bin/sandgate, Cmd serve, User
# 65532:65532; every file owned by 0:0, times zeroed (tests/realnode/images/mkimage.py).
# Before it is kept, the image's layer is unpacked and (as root) `sandgate --version`
# and `sandgate policy test /etc/sandgate/policies` run in it under chroot as 65532.
#
#   scripts/build-image.sh             build (or reuse) sandgate.local/sandgate:<version>
#                                      (Cargo.toml's, the chart's appVersion)
#   scripts/build-image.sh --tag T     ... tagged T
#   scripts/build-image.sh --binary B  ... of the sandgate binary B, built already (the
#                                      install test packs the binary the test build
#                                      made, so CI compiles the crate once; the
#                                      packing and the checks below are the same)
#   scripts/build-image.sh --help      this text
#
# Prints the tar's path, ${SANDGATE_IMAGE_CACHE:-~/.cache/sandgate/image}/<key>/
# sandgate.tar, where <key> is the first 12 hex digits of the sha256 of what it is built
# from (the binary, the policies, the Debian package versions, the tag, mkimage.py and
# this script); when that exists nothing but cargo runs. CARGO_TARGET_DIR defaults to
# ~/.cache/sandgate/target, as in CI. Needs: cargo, apt-get (Debian amd64; lists are
# updated when empty), dpkg-deb, objdump/readelf (binutils), python3; root for the chroot check.
set -euo pipefail

TRIPLET=x86_64-linux-gnu
REPO=sandgate.local/sandgate
NONROOT=65532

log() { printf 'image: %s\n' "$*" >&2; }
die() { printf 'image: ERROR: %s\n' "$*" >&2; exit 1; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF=${BASH_SOURCE[0]}
MKIMAGE=$ROOT/tests/realnode/images/mkimage.py
CACHE=${SANDGATE_IMAGE_CACHE:-$HOME/.cache/sandgate/image}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sandgate/target}
[[ $CARGO_TARGET_DIR == /* ]] || CARGO_TARGET_DIR=$PWD/$CARGO_TARGET_DIR # cargo runs in ROOT
export LC_ALL=C

# The crate's version: what the chart's image.tag defaults to (its appVersion).
TAG=$(awk -F'"' '/^version = / {print $2; exit}' "$ROOT/Cargo.toml")
GIVEN=
while (($#)); do
    case $1 in
        --binary) (($# >= 2)) || die "--binary needs a path"; GIVEN=$2; shift 2 ;;
        --binary=*) GIVEN=${1#--binary=}; shift ;;
        --tag) (($# >= 2)) || die "--tag needs a value"; TAG=$2; shift 2 ;;
        --tag=*) TAG=${1#--tag=}; shift ;;
        -h|--help) sed -n '2,35p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (try --help)" ;;
    esac
done
[[ $TAG =~ ^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$ ]] || die "not an OCI tag: $TAG"

[[ $(uname -m) == x86_64 ]] || die "builds amd64 images only (mkimage.py), on x86_64"
for c in cargo apt-get apt-cache dpkg dpkg-deb objcopy objdump readelf python3 sha256sum; do
    command -v "$c" >/dev/null || die "$c not found"
done
[[ $(dpkg --print-architecture) == amd64 ]] || die "needs a Debian amd64 system (dpkg, apt)"
umask 022
cleanup=()
trap 'rm -rf "${cleanup[@]}"' EXIT
sha() { sha256sum | cut -c1-12; }

# 1. The binary.
start=$SECONDS
if [[ -n $GIVEN ]]; then
    [[ -x $GIVEN ]] || die "--binary $GIVEN is not an executable file"
    mkdir -p "$CACHE"
    # Debug sections stripped (a test build's line tables are of no use in a pod), into
    # a file of this process's, removed at exit.
    BIN=$CACHE/.sandgate.$$
    cleanup+=("$BIN")
    objcopy --strip-debug "$GIVEN" "$BIN" || die "objcopy --strip-debug $GIVEN failed"
    log "binary: $GIVEN, debug sections stripped"
else
    log "cargo build --release --locked --bin sandgate (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)..."
    (cd "$ROOT" && nice -n 10 cargo build --release --locked --bin sandgate) >&2 ||
        die "cargo build failed"
    BIN=$CARGO_TARGET_DIR/release/sandgate
    [[ -x $BIN ]] || die "cargo left no $BIN"
    log "binary ready in $((SECONDS - start))s"
fi

# 2. What it needs at run time: its loader, and the closure of NEEDED over the host's
# libraries (what it was linked against), each mapped to the Debian package owning it.
needed() { objdump -p "$1" | awk '$1 == "NEEDED" {print $2}'; }
INTERP=$(readelf -l "$BIN" | sed -n 's/.*\[Requesting program interpreter: \(.*\)\]$/\1/p')
[[ $INTERP == /* ]] || die "$BIN has no program interpreter (a static binary needs no base)"
hostlib() { # soname -> its path on this machine
    local d
    for d in /usr/lib/$TRIPLET /lib/$TRIPLET; do
        [[ -e $d/$1 ]] && { printf '%s\n' "$d/$1"; return 0; }
    done
    die "the binary needs $1, which is not in /usr/lib/$TRIPLET"
}
owner() { # path -> the package owning it (dpkg knows /lib/... or /usr/lib/..., not both)
    local p=$1 alt out
    case $p in /usr/*) alt=${p#/usr} ;; *) alt=/usr$p ;; esac
    out=$(dpkg -S "$p" 2>/dev/null || dpkg -S "$alt" 2>/dev/null) ||
        die "no Debian package owns $p"
    out=${out%%: *}
    printf '%s\n' "${out%%:*}"
}
SONAMES=()
declare -A seen=()
queue=($(needed "$BIN"))
while ((${#queue[@]})); do
    so=${queue[0]}; queue=("${queue[@]:1}")
    [[ -n ${seen[$so]:-} ]] && continue
    seen[$so]=1
    [[ $so == "${INTERP##*/}" ]] && continue # the loader, taken below by its path
    SONAMES+=("$so")
    queue+=($(needed "$(readlink -f "$(hostlib "$so")")"))
done
declare -A pkgset=()
pkgset[$(owner "$INTERP")]=1
for so in "${SONAMES[@]}"; do pkgset[$(owner "$(hostlib "$so")")]=1; done
# A package whose doc directory is a link to another's (libgcc-s1 -> gcc-12-base, Debian
# policy 12.5) has its copyright there: that package comes along for it.
for p in "${!pkgset[@]}"; do
    l=$(readlink "/usr/share/doc/$p" 2>/dev/null || true)
    [[ -n $l && $l != */* ]] && pkgset[$l]=1
done
PKGS=($(printf '%s\n' "${!pkgset[@]}" | sort))
# A fresh machine may have no package lists yet.
if ! apt-cache policy "${PKGS[0]}" | awk '$1 == "Candidate:" && $2 != "(none)" {f=1} END {exit !f}'; then
    log "apt-get update (no package lists)..."
    apt-get update -qq >&2 || die "apt-get update failed"
fi
VERSIONS=()
for p in "${PKGS[@]}"; do
    v=$(apt-cache policy "$p" | awk '$1 == "Candidate:" {print $2}')
    [[ -n $v && $v != "(none)" ]] || die "apt knows no version of $p (apt-get update?)"
    VERSIONS+=("$p=$v")
done
log "needs ${SONAMES[*]} and $INTERP: ${VERSIONS[*]}"

# 3. The key.
policy_files() { # the files the policy loader reads (hidden entries skipped), sorted
    (cd "$ROOT/policies" && find . -name '.?*' -prune -o -type f \
        \( -name '*.rego' -o -name '*.json' -o -name '*.yaml' -o -name '*.yml' \) -print |
        sed 's|^\./||' | sort)
}
mapfile -t POLICIES < <(policy_files)
((${#POLICIES[@]})) || die "no policies in $ROOT/policies"
key=$( {
    echo "binary $(sha256sum <"$BIN" | cut -d' ' -f1)"
    (cd "$ROOT/policies" && sha256sum -- "${POLICIES[@]}")
    printf 'deb %s\n' "${VERSIONS[@]}"
    echo "tag $TAG"
    cat "$MKIMAGE" "$SELF"
} | sha)
OUT_DIR=$CACHE/$key
OUT=$OUT_DIR/sandgate.tar
if [[ -s $OUT ]]; then log "cached at $OUT"; echo "$OUT"; exit 0; fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock -n 9 || { log "another build holds $CACHE/.lock; waiting for it"; flock 9; }
if [[ -s $OUT ]]; then log "cached at $OUT"; echo "$OUT"; exit 0; fi

# Everything is built under a temporary name and renamed, so an interrupted build leaves
# no output.
start=$SECONDS
rm -rf "$CACHE"/.work.* # left by a killed build (this one holds the lock)
work=$(mktemp -d "$CACHE/.work.XXXXXX")
cleanup+=("$work")
mkdir -p "$work/debs" "$work/ext" "$work/rootfs" "$work/out"

# 4. The Debian packages, unpacked into one tree with /lib and /lib64 merged into /usr.
log "apt-get download ${VERSIONS[*]}..."
(cd "$work/debs" && apt-get download -q -o APT::Sandbox::User=root "${VERSIONS[@]}") >&2 ||
    die "apt-get download failed (apt-get update?)"
for v in "${VERSIONS[@]}"; do
    deb=$(compgen -G "$work/debs/${v%%=*}_*.deb") || die "apt-get download left no .deb of $v"
    got="$(dpkg-deb -f "$deb" Package)=$(dpkg-deb -f "$deb" Version)"
    [[ $got == "$v" ]] || die "downloaded $got, wanted $v"
    dpkg-deb -x "$deb" "$work/ext"
done
for d in lib lib64; do
    if [[ -d $work/ext/$d && ! -L $work/ext/$d ]]; then
        mkdir -p "$work/ext/usr/$d"
        cp -a "$work/ext/$d/." "$work/ext/usr/$d/"
        rm -rf "${work:?}/ext/$d"
    fi
done

# 5. The root file system.
R=$work/rootfs
mkdir -p "$R/usr/lib/$TRIPLET" "$R/usr/lib64" "$R/usr/local/bin" "$R/usr/share/doc" \
    "$R/etc/sandgate/policies" "$R/tmp" "$R/root"
ln -s usr/lib "$R/lib"
ln -s usr/lib64 "$R/lib64"
chmod 1777 "$R/tmp"
chmod 0700 "$R/root"
canon() { # an absolute path of the image -> its usrmerge form, lexically normalised
    local p
    p=$(realpath -m -s "$1")
    case $p in /lib/*|/lib64/*) p=/usr$p ;; esac
    printf '%s\n' "$p"
}
take() { # an absolute path of the image: copy it (and what its links point to) from ext
    local p t
    p=$(canon "$1")
    [[ -e $R$p || -L $R$p ]] && return 0
    [[ -e $work/ext$p || -L $work/ext$p ]] || die "$p is in none of ${PKGS[*]}"
    mkdir -p "$(dirname "$R$p")"
    cp -a "$work/ext$p" "$R$p"
    if [[ -L $work/ext$p ]]; then
        t=$(readlink "$work/ext$p")
        [[ $t == /* ]] || t=$(dirname "$p")/$t
        take "$t"
    fi
}
take "$INTERP"
for so in "${SONAMES[@]}"; do take "/usr/lib/$TRIPLET/$so"; done
for p in "${PKGS[@]}"; do
    doc=$work/ext/usr/share/doc/$p
    [[ -L $doc ]] && doc=$work/ext/usr/share/doc/$(readlink "$doc")
    [[ -f $doc/copyright ]] || die "no copyright for $p in its package (nor where its doc links to)"
    install -D -m 0644 "$doc/copyright" "$R/usr/share/doc/$p/copyright"
done
install -m 0755 "$BIN" "$R/usr/local/bin/sandgate"
for f in "${POLICIES[@]}"; do
    install -D -m 0644 "$ROOT/policies/$f" "$R/etc/sandgate/policies/$f"
done
printf '%s\n' "root:x:0:0:root:/root:/sbin/nologin" \
    "nonroot:x:$NONROOT:$NONROOT:nonroot:/nonexistent:/sbin/nologin" >"$R/etc/passwd"
printf '%s\n' "root:x:0:" "nonroot:x:$NONROOT:" >"$R/etc/group"
printf '%s\n' "passwd: files" "group: files" "hosts: files dns" >"$R/etc/nsswitch.conf"
chmod 0644 "$R/etc/passwd" "$R/etc/group" "$R/etc/nsswitch.conf"
find "$R" -type d ! -path "$R/tmp" ! -path "$R/root" -exec chmod 0755 {} +

# 6. The image, checked: one layer, every entry owned by 0:0, then run under chroot.
python3 "$MKIMAGE" "$R" "$REPO:$TAG" "$work/out/sandgate.tar" \
    --entrypoint /usr/local/bin/sandgate --cmd serve --user "$NONROOT:$NONROOT" >&2
layer=$(python3 - "$work/out/sandgate.tar" <<'EOF'
import gzip, io, json, sys, tarfile
with tarfile.open(sys.argv[1]) as oci:
    blob = lambda d: oci.extractfile("blobs/sha256/" + d.split(":")[1]).read()
    index = json.loads(oci.extractfile("index.json").read())
    manifest = json.loads(blob(index["manifests"][0]["digest"]))
    (layer,) = manifest["layers"]
    raw = gzip.decompress(blob(layer["digest"]))
with tarfile.open(fileobj=io.BytesIO(raw)) as t:
    bad = [m.name for m in t.getmembers() if m.uid or m.gid or m.isdev()]
if bad:
    sys.exit("not owned by 0:0, or a device: " + ", ".join(bad[:10]))
print(layer["digest"].split(":")[1], len(raw))
EOF
) || die "the image's layer is not as it should be (run as root?)"
layer_size=${layer#* }
if ((EUID == 0)); then
    check=$work/check
    mkdir -p "$check"
    tar -xOf "$work/out/sandgate.tar" "blobs/sha256/${layer%% *}" | tar -xz -C "$check"
    want=$("$BIN" --version)
    got=$(chroot --userspec=$NONROOT:$NONROOT "$check" /usr/local/bin/sandgate --version) ||
        die "sandgate does not run in the image"
    [[ $got == "$want" ]] || die "sandgate --version in the image says '$got', not '$want'"
    chroot --userspec=$NONROOT:$NONROOT "$check" \
        /usr/local/bin/sandgate policy test /etc/sandgate/policies >"$work/policy-test.log" 2>&1 ||
        { cat "$work/policy-test.log" >&2; die "sandgate policy test fails in the image"; }
    log "runs in the image (chroot as $NONROOT): $got; policy test: $(tail -1 "$work/policy-test.log")"
else
    log "not root: the chroot check of the image is skipped"
fi

rm -rf "$OUT_DIR"
mv "$work/out" "$OUT_DIR"
log "$REPO:$TAG: $(stat -c %s "$OUT") bytes, layer $layer_size bytes uncompressed," \
    "built in $((SECONDS - start))s"
echo "$OUT"
