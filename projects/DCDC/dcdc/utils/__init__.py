"""What the entry points (train_net.py, demo.py, tools/) share besides training and models: user
errors reported as one message (:mod:`.errors`, also raised by the library), pictures of
predictions and kernels (:mod:`.visualization`) and Grad-CAM maps (:mod:`.grad_cam`, what
tools/grad_cam.py runs)."""
