"""AtomicPusher: TFX's Pusher, with a push that TF Serving sees complete or not at all."""
