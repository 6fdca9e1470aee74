"""crossmodal_edu: tested reference implementations for the crossmodal-edu course.

Import the module you need, e.g. ``from crossmodal_edu.numpy_attention import CrossAttention``.
Nothing heavy is imported here, so ``import crossmodal_edu`` stays fast.
"""

__version__ = "0.1.0"
