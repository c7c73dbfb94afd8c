"""The ground floor: configuration, the process environment and the serving contract.

Imports nothing of the project. Importing it sets what TensorFlow must see before it loads
(core/environment.py), so every package of the project imports it first from its __init__.
"""

from core import environment  # noqa: F401
