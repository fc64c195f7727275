"""One module per tf-fleet command; cli.py parses and prints, these do the work."""
