#!/usr/bin/env bash
# Runs every test this machine can run (GPU tests skip with a reason when no GPU is visible)
# and prints a summary by label.
set -uo pipefail
build=${1:-build}
jobs=$(nproc)
ctest --test-dir "$build" --output-on-failure -j "$jobs" --output-junit junit.xml
rc=$?
echo
echo "== nvfp4kv test summary =="
for label in cpu gpu; do
  n=$(ctest --test-dir "$build" -N -L "$label" 2>/dev/null | sed -n 's/^Total Tests: //p')
  echo "  $label tests: ${n:-0}"
done
if [ -f "$build/junit.xml" ]; then
  python3 - "$build/junit.xml" <<'PY' 2>/dev/null || true
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
tc = r.iter('testcase')
n = p = f = s = 0
for t in tc:
    n += 1
    st = t.get('status', '')
    if t.find('failure') is not None or st == 'fail': f += 1
    elif t.find('skipped') is not None or st in ('notrun', 'disabled'): s += 1
    else: p += 1
print(f"  ran {n}: {p} passed, {f} failed, {s} skipped (GPU tests skip without a GPU)")
PY
fi
[ $rc -eq 0 ] && echo "  result: PASS" || echo "  result: FAIL"
exit $rc
