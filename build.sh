#!/usr/bin/env bash
# CramCore build entry point.
#   ./build.sh            build everything (native helper + managed, Release)
#   ./build.sh test       build, then run every test: the native unit tests (CRAM_DEBUG), the managed tests,
#                         then the unit and userfaultfd tests again as a Debug build against the CRAM_DEBUG library
#   ./build.sh test --unit   only the fast tests: the native unit tests and tests/CramCore.UnitTests (seconds)
#   ./build.sh demo       build, then run `cram demo` (the main job)
#   ./build.sh bench      build, then run the BenchmarkDotNet suite (args after `bench` go to it)
#   ./build.sh cram ARGS  run the built `cram` CLI, e.g. ./build.sh cram bench faults --json
#   ./build.sh pack       build, then write CramCore.<version>.nupkg, CramCore.Redis.<version>.nupkg and their .snupkg to artifacts/packages
# On a fresh Debian machine it installs what is missing (gcc/make, liblz4, redis-server and redis-tools for the remote tier's tests).
set -euo pipefail
cd "$(dirname "$0")"
root=$(pwd)
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
config=Release
cram_dll="$root/src/CramCore.Cli/bin/$config/net10.0/linux-x64/cram.dll"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

ensure_tools() {
  local missing=()
  command -v dotnet >/dev/null || { echo "build.sh: the .NET 10 SDK is required (dotnet not on PATH): https://dot.net" >&2; exit 1; }
  command -v gcc >/dev/null || missing+=(gcc)
  command -v make >/dev/null || missing+=(make)
  if ! ldconfig -p 2>/dev/null | grep -q 'liblz4\.so\.1 ' && [ ! -e /usr/lib/x86_64-linux-gnu/liblz4.so.1 ]; then
    missing+=(liblz4-1)
  fi
  # The remote tier's tests start real RESP servers on loopback (redis-server, and redis-cli for a cluster).
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v redis-cli >/dev/null || missing+=(redis-tools)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

build() {
  ensure_tools
  log "native helper (release and CRAM_DEBUG)"
  make -s -C native all debug >&2
  log "managed (dotnet build -c $config)"
  # Build output goes to stderr, so `./build.sh demo --json` prints one JSON document on stdout.
  dotnet build CramCore.sln -c "$config" -nologo -clp:ErrorsOnly -v:q >&2
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
    run_tests() { local c=$1; shift; dotnet test "$@" -c "$c" --no-build -nologo -v:q --logger "console;verbosity=minimal"; } # CONFIG PROJECT ARGS...
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
    build
    dotnet pack src/CramCore/CramCore.csproj -c "$config" --no-build -nologo -v:q -o "$root/artifacts/packages" "$@"
    dotnet pack src/CramCore.Redis/CramCore.Redis.csproj -c "$config" --no-build -nologo -v:q -o "$root/artifacts/packages" "$@"
    ls -1 "$root"/artifacts/packages/CramCore*.nupkg >&2
    ;;
  cram)
    [ -f "$cram_dll" ] || build
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
