flatune_test(test_distributed SOURCES test_distributed.cpp DEPS flatune_train)
flatune_test(test_train SOURCES test_train.cpp test_util.cpp DEPS flatune_train)
flatune_test(test_device SOURCES test_device.cpp test_util.cpp DEPS flatune_train)
