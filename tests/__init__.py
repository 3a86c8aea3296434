import os

# The Redis server the suite shares (databases by number); a second checkout running its
# suite at the same time points this at a private redis-server of its own.
REDIS_PORT = int(os.environ.get("TEST_REDIS_PORT", "6379"))
