# retain/ on its own (light dependencies).
flatune_test(test_retain SOURCES test_retain.cpp test_util.cpp DEPS flatune_train)
