"""Real test doubles for the edges: a loopback OpenSSH sshd, a temporary gpg home (used by tests, demo and benchmarks)."""
