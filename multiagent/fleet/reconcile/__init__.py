"""Between plan and apply: what is there now, the loop that carries operations out, and
its progress."""
