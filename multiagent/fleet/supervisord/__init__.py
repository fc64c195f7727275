"""The supervisord edge: XML-RPC on its socket, which programs are ours, what was last loaded."""
