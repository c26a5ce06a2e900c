# Sourced by the build scripts: one Go build at a time on this machine.
#
# Go's build cache shares a package only once it is compiled: two builds running at once
# whose module graphs overlap (the control plane, kubelet and helm all compile
# client-go) would each compile it, on a 2-core machine at half the speed. So every Go
# build of ours runs under one lock, in ~/.cache/sandgate, and a caller that needs a tool
# another build is making waits for it rather than starting its own.
#
#   go_serial LABEL COMMAND...   runs COMMAND holding the lock; its exit status

go_serial() {
    local label=$1 fd rc
    shift
    mkdir -p "$HOME/.cache/sandgate"
    exec {fd}>"$HOME/.cache/sandgate/.go-build.lock"
    if ! flock -n "$fd"; then
        printf '%s: waiting for another Go build (~/.cache/sandgate/.go-build.lock)\n' "$label" >&2
        flock "$fd"
    fi
    if "$@"; then rc=0; else rc=$?; fi
    exec {fd}>&-
    return "$rc"
}
