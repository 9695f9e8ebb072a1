# bench/lib.sh: the preamble every bench script shares. A script sources it
# first, then calls
#
#	bench_setup [PACKAGE...]
#
# which moves to the top of the mworker checkout (or dies saying how to run
# the script), installs each missing command from the Debian package of the
# same name with apt-get (root only; otherwise it says what to install), and
# checks that Go is there to build mworker.

die() {
	echo "$(basename "$0"): $*" >&2
	exit 1
}

bench_setup() {
	cd "$(dirname "$0")/.."
	[ -f go.mod ] && [ -d cmd/mworker ] || die "run me from an mworker checkout (bench/$(basename "$0"))"
	local missing=() p
	for p in "$@"; do
		command -v "$p" >/dev/null || missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		[ "$(id -u)" -eq 0 ] || die "${missing[*]} missing and not root: install them (apt-get install ${missing[*]}) or run as root"
		echo "installing ${missing[*]} with apt-get" >&2
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
	fi
	command -v go >/dev/null || die "go not found: install Go 1.26 to build mworker"
}

# build_mworker OUT builds ./cmd/mworker as a release is built: static
# (CGO_ENABLED=0: the net package would otherwise link libc and the cgo
# runtime, which costs each start and each exit; see docs/performance.md),
# without local paths. MWORKER_CGO=1 builds with cgo instead, to compare.
build_mworker() {
	local cgo=0
	[ "${MWORKER_CGO:-0}" = 1 ] && cgo=1
	CGO_ENABLED=$cgo go build -trimpath -o "$1" ./cmd/mworker || die "go build ./cmd/mworker failed"
}
