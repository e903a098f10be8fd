# In the booted Debian of scripts/vm-boot (run by it as root): the .deb
# installs, the service is active and says so through systemd's STATUS=,
# hydractl works for a member of group hydra and not for another user.
set -eu
fail() { echo "FAIL: $*"; journalctl -u hydra-agent --no-pager | tail -30; exit 1; }
dpkg -i /hydra-vm/hydra-agent.deb >/dev/null || fail "dpkg -i"
systemctl is-active --quiet hydra-agent || fail "the service is not active after dpkg -i"
systemctl is-enabled --quiet hydra-agent || fail "the service is not enabled"
status=$(systemctl show -p StatusText --value hydra-agent)
case "$status" in "0 containers"*) ;; *) fail "STATUS=: $status" ;; esac
[ "$(stat -c %G:%a /run/hydra-agent/agent.sock)" = hydra:660 ] || fail "socket: $(stat -c %G:%a /run/hydra-agent/agent.sock)"
useradd -m -G hydra alice; useradd -m bob
su alice -s /bin/sh -c 'hydractl host' >/dev/null || fail "hydractl host as alice (group hydra)"
if su bob -s /bin/sh -c 'hydractl host' >/dev/null 2>&1; then fail "hydractl host worked for bob (not in group hydra)"; fi
echo "install: ok ($status)"
