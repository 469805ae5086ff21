"""The network sensors: live capture behind a BPF filter, the flow analyser, the socket-table fallback."""
