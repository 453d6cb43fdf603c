#!/usr/bin/env pwsh
# CramCore build entry point for PowerShell; mirrors build.sh (Linux x64 only).
#   ./build.ps1            build everything (native helper + managed, Release)
#   ./build.ps1 test       build, then run every test
#   ./build.ps1 demo       build, then run `cram demo`
#   ./build.ps1 bench      build, then run the BenchmarkDotNet suite
#   ./build.ps1 pack       build, then write the NuGet packages to artifacts/packages
#   ./build.ps1 cram ARGS  run the built `cram` CLI
param([Parameter(Position = 0)][string]$Command = 'build', [Parameter(ValueFromRemainingArguments = $true)][string[]]$Rest = @())
$ErrorActionPreference = 'Stop'
Set-Location $PSScriptRoot
if (-not $IsLinux) { throw 'CramCore builds and runs on Linux x64 only (it needs userfaultfd).' }
# build.sh owns the toolchain checks and the native build; this script delegates to it so the two never drift.
& bash ./build.sh $Command @Rest
exit $LASTEXITCODE
