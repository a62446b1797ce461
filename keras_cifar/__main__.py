from keras_cifar.cli import main

main()
