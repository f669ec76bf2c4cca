"""Run plumbing shared by the entry points: where the configs are, instantiation, errors at
the command line, and what the terminal shows. No method code and no study code here."""
