"""The SSH gateway: one SSH port for all pods (a jump host, asyncssh).

Only this package speaks SSH as a server. Who may reach which pod is asked of a `Directory`
(implemented over the store by the services layer), so the gateway never touches the database.
"""
