# Shared by the .deb and .rpm maintainer scripts (sourced, POSIX sh).
# What a purge removes, and the check that refuses it while containers are
# left. The agent itself never opens the firewall when it stops, so its
# chains stay until the package is purged from an idle host.

STATE=/var/lib/hydra-agent

hydra_containers_left() {
  [ -d "$STATE/containers" ] && [ -n "$(ls -A "$STATE/containers" 2>/dev/null)" ]
}

hydra_refuse_purge() {
  n=$(ls -A "$STATE/containers" | wc -l)
  echo "hydra-agent: not purging: $n container(s) are left in $STATE (list them with \`hydractl ps\`; reinstall the package, remove them with \`hydractl rm -f NAME\`, then purge). Config and state are kept." >&2
}

# Our iptables/ip6tables chains (HYDRA-*) and the jumps to them.
hydra_remove_chains() {
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null 2>&1 || continue
    for t in filter nat; do
      "$ipt" -t "$t" -S 2>/dev/null | grep -E '^-A [A-Z]+ .*-j HYDRA-' | sed 's/^-A /-D /' |
        while read -r rule; do eval "\"$ipt\" -t $t $rule" || true; done
      chains=$("$ipt" -t "$t" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^HYDRA-/ {print $2}')
      for c in $chains; do "$ipt" -t "$t" -F "$c" || true; done
      for c in $chains; do "$ipt" -t "$t" -X "$c" || true; done
    done
  done
}

hydra_purge() {
  hydra_remove_chains
  rm -rf "$STATE" /etc/hydra-agent /run/hydra-agent
  if getent group hydra >/dev/null; then groupdel hydra || true; fi
}
