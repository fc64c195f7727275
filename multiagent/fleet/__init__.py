"""tf-fleet: the fleet file, its rendering and plan, the supervisord edge, the host's
files, and the commands."""
