flatune_test(test_eval SOURCES test_eval.cpp test_util.cpp DEPS flatune_eval)
flatune_test(test_eval_importers SOURCES test_eval_importers.cpp test_util.cpp DEPS flatune_eval)
