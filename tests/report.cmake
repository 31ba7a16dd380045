flatune_test(test_report SOURCES test_report.cpp test_util.cpp DEPS flatune_report)
flatune_test(test_watch SOURCES test_watch.cpp test_util.cpp DEPS flatune_report)
