"""nbgrader in a torchlab image: one course per hub, its exchange in the hub's shared volume.

The teacher's course (source/, release/, submitted/, autograded/, feedback/ and the gradebook)
lives in their own home; the exchange, where releases, submissions and feedback pass between
servers, is the hub's exchange volume, mounted at the same place in every server. Each server
runs as a uid of its own (hub/jupyterhub_config.py), so nbgrader's permissions hold: a student
writes into inbound/ but cannot list it, and finds only their own feedback (docs/class).
"""

import os

c = get_config()  # noqa: F821 (nbgrader provides get_config to its config files)

c.CourseDirectory.course_id = os.environ.get("TORCHLAB_COURSE_ID", "course")
c.CourseDirectory.root = os.path.join(os.environ.get("HOME", "/home/lab"), "course")
c.Exchange.root = os.environ.get("TORCHLAB_EXCHANGE", "/srv/nbgrader/exchange")
