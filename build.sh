#!/usr/bin/env bash
# CramCore build entry point.
#   ./build.sh            build everything (native helper + managed, Release)
#   ./build.sh test       build, then run every test: the native unit tests (CRAM_DEBUG), the managed tests,
#                         then the unit and userfaultfd tests again as a Debug build against the CRAM_DEBUG library
#   ./build.sh test --unit   only the fast tests: the native unit tests and tests/CramCore.UnitTests (seconds)
#   ./build.sh demo       build, then run `cram demo` (the main job)
#   ./build.sh bench      build, then run the BenchmarkDotNet suite; args after `bench` go to BenchmarkDotNet:
#                         --list flat (the benchmarks), --filter '*Estimator*' (a glob over Namespace.Class.Method), --job short
#   ./build.sh cram ARGS  run the `cram` CLI, built first if a source changed since the last build, e.g. ./build.sh cram bench faults --json
#   ./build.sh pack       build the packages with a version of their own (0.1.0-dev.<commits>.<n>.g<sha>[.dirty]: no cached
#                         package can stand in for this build) into artifacts/packages (or $CRAMCORE_PACK_OUTPUT), and print the commands that use them
# On a fresh Debian machine it installs what is missing (gcc/make, liblz4, libzstd, redis-server and redis-tools for the remote tier's tests).
set -euo pipefail
cd "$(dirname "$0")"
root=$(pwd)
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
config=Release
cram_dll="$root/src/CramCore.Cli/bin/$config/net10.0/linux-x64/cram.dll"
stamp="$root/artifacts/.built" # touched after each successful build: `cram` and `pack` rebuild when a source is newer

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

ensure_tools() {
  local missing=()
  command -v dotnet >/dev/null || { echo "build.sh: the .NET 10 SDK is required (dotnet not on PATH): https://dot.net" >&2; exit 1; }
  command -v gcc >/dev/null || missing+=(gcc)
  command -v make >/dev/null || missing+=(make)
  if ! ldconfig -p 2>/dev/null | grep -q 'liblz4\.so\.1 ' && [ ! -e /usr/lib/x86_64-linux-gnu/liblz4.so.1 ]; then
    missing+=(liblz4-1)
  fi
  # zstd decodes (and the recompressor encodes) cold copies: the system libzstd.so.1.
  if ! ldconfig -p 2>/dev/null | grep -q 'libzstd\.so\.1 ' && [ ! -e /usr/lib/x86_64-linux-gnu/libzstd.so.1 ]; then
    missing+=(libzstd1)
  fi
  # The remote tier's tests start real RESP servers on loopback (redis-server, and redis-cli for a cluster).
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v redis-cli >/dev/null || missing+=(redis-tools)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

build() {
  ensure_tools
  log "native helper (release and CRAM_DEBUG)"
  make -s -C native all debug >&2
  log "managed (dotnet build -c $config)"
  # Build output goes to stderr, so `./build.sh demo --json` prints one JSON document on stdout.
  dotnet build CramCore.sln -c "$config" -nologo -clp:ErrorsOnly -v:q >&2
  touch "$stamp"
}

# Builds when nothing was built yet or a source (C, C#, project file) changed since the last build.
build_if_stale() {
  if [ ! -f "$stamp" ] || [ ! -f "$cram_dll" ] || [ -n "$(find src native bench Directory.Build.props Directory.Packages.props \
       \( -name bin -o -name obj \) -prune -o -type f -newer "$stamp" -print -quit)" ]; then
    build
  fi
}

cmd=${1:-build}
[ $# -gt 0 ] && shift
case "$cmd" in
  build) build ;;
  test)
    build
    log "native unit tests (CRAM_DEBUG)"
    make -s -C native test >&2
    # A failed test prints its message and stack (the quiet build output alone would only name it).
    # Progress on a long run: each test's result as it finishes (normal verbosity), passed ones counted
    # in a line every 25 rather than printed; failures, their messages and the summaries pass through.
    run_tests() { # CONFIG PROJECT ARGS...
      local c=$1; shift
      dotnet test "$@" -c "$c" --no-build -nologo -v:q --logger "console;verbosity=normal" |
        awk '/^  Passed / { n++; if (n % 25 == 0) { printf "  ... %d passed\n", n; fflush() } next } { print; fflush() }'
    }
    if [ "${1:-}" = "--unit" ]; then
      shift
      log "managed unit tests (no userfaultfd)"
      run_tests "$config" tests/CramCore.UnitTests "$@"
    else
      log "managed tests"
      run_tests "$config" CramCore.sln "$@"
      # Debug builds and the CRAM_DEBUG library check every page-state transition (C# Debug.Assert and
      # native checks against cramnative.h's table) and every lock the code says it holds.
      log "unit and userfaultfd tests, Debug build, against the CRAM_DEBUG native library"
      dotnet build tests/CramCore.UnitTests -c Debug -nologo -clp:ErrorsOnly -v:q >&2
      dotnet build tests/CramCore.IntegrationTests -c Debug -nologo -clp:ErrorsOnly -v:q >&2
      run_tests Debug tests/CramCore.UnitTests "$@"
      CRAMCORE_NATIVE_LIBRARY="$root/artifacts/native/debug/libCramNative.so" \
        run_tests Debug tests/CramCore.IntegrationTests --filter "Category=Userfaultfd" "$@"
    fi
    ;;
  demo)
    build
    dotnet "$cram_dll" demo "$@"
    ;;
  bench)
    build
    dotnet "$root/bench/CramCore.Benchmarks/bin/$config/net10.0/linux-x64/CramCore.Benchmarks.dll" "${@:---filter=*}"
    ;;
  pack)
    build_if_stale
    out="${CRAMCORE_PACK_OUTPUT:-$root/artifacts/packages}"
    mkdir -p "$out"
    # A version no other build has: the base version, the commits to HEAD, this clone's pack counter, the
    # commit, and .dirty for uncommitted changes. NuGet caches packages by id and version in
    # ~/.nuget/packages, so a reused version would silently bring back whatever was packed under it first.
    base=$(sed -n 's:.*<CramCoreVersion>\(.*\)</CramCoreVersion>.*:\1:p' Directory.Build.props)
    commits=$(git rev-list --count HEAD 2>/dev/null || echo 0)
    sha=$(git rev-parse --short=7 HEAD 2>/dev/null || echo nogit)
    dirty=$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo .dirty || true)
    n=$(( $(cat "$out/.pack-counter" 2>/dev/null || echo 0) + 1 ))
    echo "$n" > "$out/.pack-counter"
    version="$base-dev.$commits.$n.g$sha$dirty"
    log "packing CramCore and CramCore.Redis $version"
    # Built with that version too, so the assembly says which build it is (AssemblyInformationalVersion).
    for project in src/CramCore/CramCore.csproj src/CramCore.Redis/CramCore.Redis.csproj; do
      dotnet pack "$project" -c "$config" -nologo -v:q -clp:ErrorsOnly -o "$out" -p:Version="$version" -p:ContinuousIntegrationBuild=true "$@" >&2
    done
    cat <<USAGE
Packed $out/CramCore.$version.nupkg and $out/CramCore.Redis.$version.nupkg (with .snupkg symbols).
Use them from your project's directory:
  dotnet new nugetconfig                # if the project has no nuget.config yet
  dotnet nuget add source $out --name cramcore-local --configfile nuget.config
  dotnet add package CramCore --version $version
  dotnet add package CramCore.Redis --version $version   # the remote tier, if you want it
USAGE
    ;;
  cram)
    build_if_stale
    dotnet "$cram_dll" "$@"
    ;;
  clean)
    rm -rf artifacts && dotnet clean CramCore.sln -c "$config" -v:q >/dev/null
    ;;
  *)
    echo "usage: ./build.sh [build|test|demo|bench|pack|cram ARGS...|clean]" >&2
    exit 2
    ;;
esac
