# The README's stage rule, enforced: a stage includes only the stages it
# consumes. Each rule names a folder and the folders its sources must not
# include from; the planner, the cost model and the CPU executor ask the
# family registry (families/), never the generator. Run by CTest
# (StageRules.*):
#   cmake -DSOURCE_DIR=<tree> -P tests/stages/include_rules.cmake
# fails listing every offending line.
if(NOT SOURCE_DIR)
  message(FATAL_ERROR "include_rules.cmake: pass -DSOURCE_DIR=<source tree>")
endif()

# folder | forbidden include prefixes (comma-separated)
set(RULES
  "runtime/plan|generator/"
  "autotune|generator/"
  "cpu|generator/"
  "runtime/tree|generator/,families/"
  "families|generator/,runtime/,autotune/,cpu/"
  "core|generator/,runtime/,autotune/,cpu/,families/")

set(violations "")
set(checked 0)
foreach(rule ${RULES})
  string(REPLACE "|" ";" parts "${rule}")
  list(GET parts 0 folder)
  list(GET parts 1 forbidden)
  string(REPLACE "," ";" forbidden "${forbidden}")
  file(GLOB_RECURSE sources ${SOURCE_DIR}/${folder}/*.cpp ${SOURCE_DIR}/${folder}/*.hpp
       ${SOURCE_DIR}/${folder}/*.h ${SOURCE_DIR}/${folder}/*.cuh)
  foreach(source ${sources})
    math(EXPR checked "${checked} + 1")
    file(STRINGS ${source} includes REGEX "^[ \t]*#[ \t]*include[ \t]*[\"<]")
    foreach(line ${includes})
      foreach(prefix ${forbidden})
        if(line MATCHES "#[ \t]*include[ \t]*[\"<]${prefix}")
          file(RELATIVE_PATH rel ${SOURCE_DIR} ${source})
          string(STRIP "${line}" line)
          string(APPEND violations "\n  ${rel}: ${line} (${folder}/ must not include ${prefix})")
        endif()
      endforeach()
    endforeach()
  endforeach()
endforeach()

if(checked EQUAL 0)
  message(FATAL_ERROR "include_rules.cmake: no sources found under ${SOURCE_DIR}")
endif()
if(violations)
  message(FATAL_ERROR "stage include rules broken:${violations}")
endif()
message(STATUS "stage include rules hold in ${checked} files")
