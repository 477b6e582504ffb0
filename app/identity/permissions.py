"""The permissions Depot grants, in order: a permission includes those before it. Namespace grants
(app/identity/access.py) and access tokens restricted to resources (app/identity/auth.py) both speak them."""

PERMISSIONS = ("read", "write", "delete", "admin")
RANK = {name: rank for rank, name in enumerate(PERMISSIONS)}
NONE = -1  # no permission at all
