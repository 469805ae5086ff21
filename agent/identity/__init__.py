"""Who this agent is: host id and facts, its key and certificate, enrollment and renewal."""
