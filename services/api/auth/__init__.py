"""Identity and access: Keystone v3 subset, tokens, request context and Octavia RBAC."""
