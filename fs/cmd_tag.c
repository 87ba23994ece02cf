/* amberfs tag: placeholder while the command is being written. */
#include "cli.h"

int cmd_tag(int argc, char **argv)
{
	return cli_error("tag: not implemented yet");
}
