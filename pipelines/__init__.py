"""Running the DVC pipeline elsewhere: `kubeflow.py` compiles dvc.yaml into a Kubeflow pipeline whose steps run
`step.py` in the image of the Dockerfile."""
