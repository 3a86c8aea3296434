"""The kit that runs the product on one machine: the robot simulator, the demo, the local
process runner and the embedded Redis. Nothing here runs in production."""
