"""fabric Connections into the lab: the product's (kubeboot/sandbox/connect.py)."""

from kubeboot.sandbox.connect import LabConnection as LabConnection
from kubeboot.sandbox.connect import make_connection as make_connection
