"""The command line: `umbra-agent` and its subcommands, the output formats, the `scan --pcap` runner."""
