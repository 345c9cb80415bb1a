"""Scale-out: who is live, which worker owns which shard, claims, and handing episodes over."""
