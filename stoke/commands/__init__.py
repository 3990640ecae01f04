"""The command line: `stoke` subcommands (run, doctor, env, bench, demo) and the examples the demo runs."""
