# In the booted Debian of scripts/vm-boot: systemd's watchdog. The agent
# stopped with SIGSTOP stops pinging; systemd restarts it within
# WatchdogSec + RestartSec; the container it ran is untouched and
# re-adopted by the new agent.
set -eu
fail() { echo "FAIL: $*"; journalctl -u hydra-agent --no-pager | tail -30; exit 1; }
dpkg -i /hydra-vm/hydra-agent.deb >/dev/null || fail "dpkg -i"
hydractl run --name w --image rootfs:/hydra-vm/busybox --memory 32Mi -- sleep 100000 >/dev/null || fail "run"
cpid=$(hydractl --json inspect w | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' | head -1)
[ -n "$cpid" ] || fail "no pid for w"
old=$(systemctl show -p MainPID --value hydra-agent)
wd=$(systemctl show -p WatchdogUSec --value hydra-agent)
kill -STOP "$old"
t0=$(date +%s)
# poll: a new main pid, active again (READY=1)
while :; do
  new=$(systemctl show -p MainPID --value hydra-agent)
  if [ "$new" != "$old" ] && [ "$new" != 0 ] && systemctl is-active --quiet hydra-agent; then break; fi
  [ $(( $(date +%s) - t0 )) -lt 120 ] || fail "not restarted within 120 s (WatchdogUSec=$wd)"
  sleep 0.5
done
took=$(( $(date +%s) - t0 ))
journalctl -u hydra-agent --no-pager | grep -q 'Watchdog timeout' || fail "restarted, but not by the watchdog"
kill -0 "$cpid" || fail "the container's process died"
[ "$(hydractl --json inspect w | sed -n 's/.*"state": *"\([a-z]*\)".*/\1/p' | head -1)" = running ] || fail "w not running after the restart"
kill -CONT "$old" 2>/dev/null || true
echo "watchdog: ok (restarted after ${took}s, WatchdogUSec=$wd; the container kept running)"
