"""The on-device benchmark agent.

Runs ON THE DEVICE, shipped as one zipapp (built on the host by ``edgeopt/bench/zipapp.py``).
Imports only the standard library, numpy and a runtime; never the rest of edgeopt.
Must run on Python >= 3.9 with numpy 1.x or 2.x. The result JSON is documented in docs/agent.md.
"""

AGENT_VERSION = "0.1.0"
SCHEMA = 1
