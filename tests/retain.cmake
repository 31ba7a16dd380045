# retain/ on its own (light dependencies), and the Wise-FT sweep that needs the evaluation and
# report modules.
flatune_test(test_retain SOURCES test_retain.cpp test_util.cpp DEPS flatune_train)
flatune_test(test_retain_sweep SOURCES test_retain_sweep.cpp test_util.cpp DEPS flatune_report)
