"""An MCP stand-in that answers every line with something that is not JSON-RPC."""
import sys

for line in sys.stdin:
    sys.stdout.write("this is not json {{{ \x01\x02\n")
    sys.stdout.write('{"jsonrpc": "2.0", "id": "nobody asked", "result": 42}\n')
    sys.stdout.flush()
