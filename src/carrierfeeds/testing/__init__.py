"""Real parts for tests, demo and benchmarks: a loopback OpenSSH sshd, a temporary gpg home."""
