"""Every world's gold by the world's name, for configs: `alignment.assets.golds:<world>.gold_reward` scores one
completion (judges, scripted annotators), `alignment.assets.golds:<world>.gold` a batch (`reward.function`,
`reward.monitor`). A module of its own, so no world name can shadow anything else.
"""

from alignment.assets.worlds import WORLDS

globals().update(WORLDS)
