flatune_test(test_eval SOURCES test_eval.cpp test_util.cpp DEPS flatune_eval)
